"""What a fleet has earned and whether its promise holds: the facts behind `smallfleet costs`'
live-quality table and `smallfleet report`'s HTML page."""
