"""The fleet learns from its own traffic: feedback on answers, and the labelled examples the
gateway's log has gathered (reviews, feedback, upstream answers) for the next version."""
