"""What each network *is*, as plain data: one module per NAS family."""
