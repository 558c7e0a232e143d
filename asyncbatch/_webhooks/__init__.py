"""Webhook deliveries, public as `asyncbatch.webhooks`: `signature` verifies and signs them, `event`
decodes them, `receiver` turns them into refreshes of a watcher (`throttle` coalesces those), and
`server` hosts a receiver on its own port."""
