"""`boxlite-chaos points`: discover each operation's fault points, diff them between releases,
land a fault at each point and write the coverage page."""
