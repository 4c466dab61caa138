"""Integrations with the frameworks around the decorators: evictions after a database commit
(``integrations.sqlalchemy``, ``integrations.django``). Each imports its framework, an optional extra."""
