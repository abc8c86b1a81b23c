"""Drive mpitrain from Python: ``mpirun -n 2 python examples/train_api.py``.

Every rank calls ``train`` (it is collective); rank 0 prints the result.
"""

from mpi4py import MPI

from mpitrain import train

result = train(data="synthetic", samples=4000, features=16, classes=3, model="softmax",
               epochs=5, batch_size=128, lr=0.5, quiet=True)
if MPI.COMM_WORLD.Get_rank() == 0:
    final = result.history[-1]
    print(f"test accuracy {final['test_accuracy']:.3f} after {final['epoch']} epochs")
    print("parameters:", {name: value.shape for name, value in result.params.items()})
