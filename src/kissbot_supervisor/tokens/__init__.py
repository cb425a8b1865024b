"""Tokens: their states and the secrets they are made from.

``states`` judges a token and handles the Fernet key and credential files;
``db`` reads KissBot's SQLite token DB, read-only; ``gate`` keeps every
process's token state current and hands a token over at start.
"""
