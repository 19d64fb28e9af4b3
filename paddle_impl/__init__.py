"""PaddlePaddle twins of every model, op and optimizer.  Never imports torch or tensorflow."""
