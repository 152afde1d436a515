// A tiny static network probe for the real node's tests: listens on ports, dials with a timeout,
// answers and asks DNS questions. Standard library only.
module matrixstack.local/cluster/probe

go 1.24.0
