"""The flights team's ML code: the delay model's training function (`delay`) and the month batches (`months`)."""
