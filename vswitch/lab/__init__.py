"""The namespace lab: lab builder, gateway lab, ucarp peers, captures, probes and the demo."""
