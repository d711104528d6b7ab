"""Circuit discovery: the edge graph, exact edge patching, EAP, EAP-IG, ACDC, faithfulness (issue 6)."""
