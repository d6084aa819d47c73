"""The store: SQLModel tables (Alembic owns the schema), engine set-up and the
named SQL the dispatcher relies on."""
