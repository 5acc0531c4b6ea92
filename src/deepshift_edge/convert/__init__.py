"""Converters from and to the frameworks people train in. Each imports its framework
lazily (only when called), so the core never needs them."""
