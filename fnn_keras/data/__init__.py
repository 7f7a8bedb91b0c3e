"""Reading labelled text and turning it into `tf.data` pipelines."""
