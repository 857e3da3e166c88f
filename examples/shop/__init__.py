"""A small shop backend: the app the example test suite exercises through depfakes."""
