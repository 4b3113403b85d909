"""Integrations with other systems; each module needs its own extra and uses only tribit's
public API.

- `ray_serve`: many replicas of `tribit serve` behind one Ray Serve endpoint (`tribit[ray]`).
- `ray_data`: batch completion over a Ray Data dataset (`tribit[ray]`).

docs/SCALING.md says when to use which.
"""
