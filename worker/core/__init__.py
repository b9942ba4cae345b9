"""Pure: a request, its checks and validation, the batch, answers, replies, errors."""
