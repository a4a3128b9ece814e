"""The stateless management-side driver: one module per operation family, each function taking a DriverContext."""
