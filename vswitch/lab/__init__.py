"""The namespace lab: lab builder, gateway lab, ucarp peers, captures, traffic, probes, demo."""
