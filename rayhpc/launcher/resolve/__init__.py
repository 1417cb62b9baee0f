"""Resolving a launch: site profiles and settings (`config`), node groups (`groups`), queue
tables (`queues`), the driver (`driver`), run ids and ports (`spec`). Pure: data in, checked
data out; nothing here starts or writes anything."""
