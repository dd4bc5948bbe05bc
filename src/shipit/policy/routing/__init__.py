"""Pure routing policies: rank candidate replicas for a request."""
