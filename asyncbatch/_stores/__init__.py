"""State stores, where a watcher keeps what its consumer acknowledged: the record, the
`StateStore` protocol and `MemoryStore` (`memory`), `SQLiteStore` (`sqlite`), and the `--state`
URL that opens one of them with its gate and leases (`url`). The Redis store is public in
`asyncbatch.redis`."""
