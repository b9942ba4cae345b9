"""PostgreSQL: pools, migrations, statements, the write path, expiry."""
