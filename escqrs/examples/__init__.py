"""Example domains built on the framework, used by the demo, the README and the tests."""
