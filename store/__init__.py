"""The SQL store: tables, repository functions, engine and migrations. Imports nothing else of ours."""
