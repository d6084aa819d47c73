"""The web side (FastAPI). This issue: the health check; later: subscribe,
confirm, unsubscribe, click tracking, webhooks, admin."""
