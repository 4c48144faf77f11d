"""Layer, image token and step chosen by measurement: IoU of pass-1 maps with known subject masks."""
