"""Replay: the engine that times a dataflow graph, the cost models, and the what-if
transforms. Reading and replaying never needs torch."""
