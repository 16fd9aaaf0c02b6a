/* The host page's own script: its button fails the way a real page would. */
document.getElementById('break').addEventListener('click', function () {
  console.error('Payment failed: card declined (code 402)');
  setTimeout(function () { throw new Error('checkout.js exploded'); }, 0);
});
