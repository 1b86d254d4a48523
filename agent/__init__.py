"""patrol-agent: finds civil-complaint elements from a patrol vehicle and reports them."""

__version__ = "0.1.0"
