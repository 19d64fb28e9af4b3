"""PyTorch twins of every model, op and optimizer.  Never imports paddle or tensorflow."""
