"""Research to production: workspace, store, signing, gates, pipeline, promotion, reports."""
