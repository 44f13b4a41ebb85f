"""The streaming algorithm: reference, hybrid motion, micro-chunk window, 4-step DDIM, historical
keyframes, the session that ties them, and the render loop around it."""
