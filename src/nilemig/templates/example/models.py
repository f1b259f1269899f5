"""Models from Nile's Alembic walkthrough: the shared `account` table and a tenant-aware `todos` table.

`tenants` is Nile's built-in table, defined by nilemig as Nile defines it, so
autogenerate never tries to drop or rewrite it.
"""

import uuid

from sqlalchemy import Boolean, Integer, String, Unicode
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nilemig.nile import TenantAware, define_tenants


class Base(DeclarativeBase):
    pass


tenants = define_tenants(Base.metadata)


class Account(Base):
    """The walkthrough's shared table, created by the hand-written first migration."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Unicode(200))


class Todo(TenantAware, Base):
    __tablename__ = "todos"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(1000))
    complete: Mapped[bool | None] = mapped_column(Boolean, default=False)
