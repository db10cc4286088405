"""The agent service: watcher, ledger, pipeline, publisher, control, sd_notify."""
