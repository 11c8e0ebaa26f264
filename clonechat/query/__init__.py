"""Asking questions of a run database: read-only SQL, full-text search, keyword rates,
exports and DataFrames. Nothing here can change the database."""
