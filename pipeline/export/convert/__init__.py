"""Turn rewritten passes into LiteRT graphs: the graph functions of each graph kind (``functions``), their static
shapes for devices (``shapes``) and the converter with stable tensor names (``tflite``)."""
