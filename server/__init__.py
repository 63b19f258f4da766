"""rkd.server: the maintainers' ingestion server and ClickHouse warehouse.

Installed with the ``server`` extra; started with ``rkd-server run``. Uses
:mod:`rkd.client` (wire protocol, schema, vocabulary) and the daemon's pure scanner;
nothing imports it.
"""
