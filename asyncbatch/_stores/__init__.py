"""State stores, where a watcher keeps what its consumer acknowledged: the record, the
`StateStore` protocol and `MemoryStore` (`memory`), `SQLiteStore` (`sqlite`), and the `--state`
URL that opens one of them with its gate and leases (`url`), and what every Redis piece
shares (`redis_errors`). The Redis store is public in
`asyncbatch.redis`."""
