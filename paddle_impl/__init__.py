"""PaddlePaddle twins of every model, op and optimizer.  Never imports torch or tensorflow."""
import warnings

# Paddle warns about a missing ccache on every import (it only matters for building C++ extensions).
warnings.filterwarnings("ignore", message="No ccache found")
