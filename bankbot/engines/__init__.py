"""Engines the project runs itself from Debian packages: PostgreSQL, Redis, RabbitMQ and nginx."""
