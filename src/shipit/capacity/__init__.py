"""Pure capacity math and catalogs: memory, performance model, recommender, SLO sizing, cost."""
