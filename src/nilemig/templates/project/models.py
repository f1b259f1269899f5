"""Your SQLAlchemy models; `nilemig autogen` compares them with the database.

Nile's built-in `tenants` table comes from nilemig exactly as Nile defines it:
reference it (foreign keys, relationships), never redefine it. Tenant-aware
tables use the TenantAware mixin, which puts `tenant_id` (uuid, references
tenants.id) in the primary key, as Nile requires.
"""

from sqlalchemy.orm import DeclarativeBase

from nilemig.nile import TenantAware, define_tenants  # noqa: F401  (TenantAware: for your tables)


class Base(DeclarativeBase):
    pass


tenants = define_tenants(Base.metadata)

# A tenant-aware table looks like this:
#
# import uuid
# from sqlalchemy import String
# from sqlalchemy.orm import Mapped, mapped_column
#
# class Todo(TenantAware, Base):
#     __tablename__ = "todos"
#     id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
#     title: Mapped[str] = mapped_column(String(256))
