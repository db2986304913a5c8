"""The event relay: Rasa's tracker events, published to RabbitMQ by its pika event broker, into the cross-channel
event store (`python -m channels.event_relay`)."""
