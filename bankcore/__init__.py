"""Shared core: settings, database, customers and identities, the sandbox core-banking ledger."""
