"""The bootstrap registry: a Litestar HTTP API over a peewee/SQLite lookup table."""
