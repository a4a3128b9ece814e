"""What the management side and the KVM host agent both need, so that neither imports the
other: the agent commands' request types (`command_types`), the forms of secondary-storage
locations (`locations`), the agent link's settings (`link`) and the driver's client of the
agent API (`client`, a connection layer like `spconn`)."""
