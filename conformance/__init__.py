"""The conformance suite: property-based proof that every backend agrees with
the numpy reference (``unibackend conformance``)."""
