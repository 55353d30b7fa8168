"""The search service: spaces, samplers, schedulers, the study, and what it reports."""
