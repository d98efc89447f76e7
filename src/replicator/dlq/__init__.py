"""The dead-letter queue: change events the target would not take, kept with everything
needed to explain them and to replay them once the cause is fixed."""
