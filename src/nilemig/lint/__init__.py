"""`nilemig check`: Nile's rules and common migration hazards, checked from the files alone."""
