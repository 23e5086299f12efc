"""A trial's data: files and hub data sets read and checked, splits tokenized once per node, padded, batched by
length; paths inside an uploaded Ray job. Imports study and remote."""
