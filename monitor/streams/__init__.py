"""The Kafka shell: Faust app, topics, the ingest agent and checkpoints (design §2 "thin shells").

``topics`` declares every topic once; ``core`` holds the Faust-free logic (arrival-order merge,
positions, dead letters, checkpoints); ``checkpoint`` persists it; ``app`` wires Faust to it; ``io`` is
the kafka-python loader and reader behind ``monitor produce`` / ``monitor consume``.
"""
