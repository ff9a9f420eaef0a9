"""What the tests share: fakes of the servers nothing real can stand in for here (named FAKE), the KFP backend
EMULATION, schemas, and the helpers of the container and cluster tiers. Imported as ``support.<module>`` (pytest puts
tests/ on the path: pyproject.toml, pythonpath)."""
