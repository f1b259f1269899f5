from nilemig.cli import main

main()
