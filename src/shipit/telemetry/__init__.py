"""Every metric defined once, alert rules and dashboards."""
